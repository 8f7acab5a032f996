"""Native code lorabooth compiles on the machine it runs on, at first use, into its user cache
(torch's C++ extension builder; a compiler and ninja are needed, and without them training runs
on torch's own kernels, only slower)."""
