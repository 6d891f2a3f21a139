"""Test support shared by the suites: throwaway servers and fixtures (pytest plugins)."""
