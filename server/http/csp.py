"""The Content Security Policy: strict on every page (no inline script or style, nothing
from another host), with Stripe's hosts added on the one page that takes cards."""

from __future__ import annotations

STRICT_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'; script-src 'self'; style-src 'self'"
)
# What Stripe.js needs (docs.stripe.com/security/guide#content-security-policy): its
# script, its card iframes, and its API for creating payment methods.
STRIPE_CSP = (
    "default-src 'self'; img-src 'self' data: https://*.stripe.com; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
    "script-src 'self' https://js.stripe.com; style-src 'self'; "
    "frame-src https://js.stripe.com https://hooks.stripe.com; "
    "connect-src 'self' https://api.stripe.com"
)
