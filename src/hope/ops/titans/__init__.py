"""Fast paths of the self-referential Titans layer: `fused` (autograd around the Triton forward of
`chunk_fwd`). The readable PyTorch chunk path is `hope.memory.chunked`; the token-by-token reference is
`hope.memory.core`."""
