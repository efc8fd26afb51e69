"""Running Triton (launcher) and talking to it (client)."""
