"""Accounts: users, passwords and tokens, sessions, API keys, OAuth, rate limits."""
