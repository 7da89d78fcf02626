"""Real, throwaway servers the test suite starts for itself (no mocks, no shared machine state)."""
