"""Generate responses from a policy (local model folder, hub id, or OpenAI-compatible endpoint)."""
