"""Billing: plans, quotas and the credit ledger; Stripe payments and webhooks."""
