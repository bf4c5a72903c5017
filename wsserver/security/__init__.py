"""Security decisions: IP rules, endpoint access, (later) keystores, users and tokens."""
