"""The fast path, one concern a module: which switches a run gets (``policy``), compilation with a fallback
(``compile``), the CUDA graph of a step (``graph``), the allocator setting (``memory``), and the object a fit's
module owns to run its steps with them (``runner``). The measurements behind each rule: docs/performance.md."""
