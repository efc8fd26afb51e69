"""The orchestrator's HTTP API (FastAPI)."""
