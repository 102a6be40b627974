"""Use cases. Functions take keyword-only arguments (``db``, ``tenant_id``, ...): no hidden globals."""
