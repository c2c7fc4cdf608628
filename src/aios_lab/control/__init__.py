"""The policy control plane: what stands between whoever proposes a scheduler and the kernel."""
