"""Generators of the operators' parameters and of synthetic data: sampling masks, coil maps, phantoms."""
