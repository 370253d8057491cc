//! fedistream-process: pure transformations (no I/O, clock passed in).
