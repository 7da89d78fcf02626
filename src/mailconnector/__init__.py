"""mailconnector: an email connector for integration work."""
