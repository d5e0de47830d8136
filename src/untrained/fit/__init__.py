"""Fitting: the LightningModules of a single fit (``module``) and of B fits in one optimizer step (``batched``),
the bookkeeping they share (``tracker``, ``base``) and Lightning's loop pieces they use (``loop``)."""
