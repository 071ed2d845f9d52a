"""Remote boards: connecting through TVM's tracker or directly, running libraries there, and emulated boards."""
