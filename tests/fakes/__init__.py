"""Local stand-ins for platform APIs, spoken to by the real client libraries."""
