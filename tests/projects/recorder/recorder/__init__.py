"""A package whose build recorded what its hooks received (records.jsonl)."""
