"""The words of every mail, in plain text: subject and body from the few facts each needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

# Stripe's currencies without minor units: an amount of 500 JPY is 500 yen, not 5.
_ZERO_DECIMAL = {
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
    "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
}  # fmt: skip
_SIGN_OFF = "\n\n-- \nRodeoAI"


@dataclass(frozen=True)
class Mail:
    kind: str
    subject: str
    body: str


def money(amount: int, currency: str) -> str:
    code = currency.lower()
    if code in _ZERO_DECIMAL:
        return f"{amount} {code.upper()}"
    return f"{amount / 100:.2f} {code.upper()}"


def welcome(*, name: str, email: str, base_url: str) -> Mail:
    hello = f"Hello {name}," if name else "Hello,"
    return Mail(
        "welcome",
        "Welcome to RodeoAI",
        f"{hello}\n\nyour RodeoAI account for {email} is ready. Sign in at "
        f"{base_url}/sign-in and ask about any rodeo event, rule or technique.\n\n"
        "If you did not sign up, you can ignore this mail: nobody can use the account "
        f"without its password, and you can reset it at {base_url}/reset-password." + _SIGN_OFF,
    )


def password_reset(*, email: str, token: str, base_url: str, minutes: int) -> Mail:
    link = f"{base_url}/reset-password?token={quote(token, safe='')}"
    return Mail(
        "password_reset",
        "Reset your RodeoAI password",
        f"Someone asked to reset the password of the RodeoAI account {email}.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n\n{link}\n\n"
        "The link works once. Setting a new password signs the account out everywhere.\n"
        "If you did not ask for this, ignore this mail: the password stays as it is." + _SIGN_OFF,
    )


def receipt(*, what: str, amount: int, currency: str, reference: str, base_url: str) -> Mail:
    return Mail(
        "receipt",
        f"Your RodeoAI receipt: {money(amount, currency)}",
        f"Thank you. We received your payment of {money(amount, currency)} for {what}.\n\n"
        f"Reference: {reference}\n\nYour plan, credits and payments: {base_url}/billing"
        + _SIGN_OFF,
    )


def payment_failed(*, amount: int, currency: str, reference: str, base_url: str) -> Mail:
    return Mail(
        "payment_failed",
        "Your RodeoAI payment did not go through",
        f"We could not take the payment of {money(amount, currency)} for your RodeoAI Pro "
        "subscription. The card may have been declined or expired.\n\n"
        f"Reference: {reference}\n\nPlease check your payment method at {base_url}/billing. "
        "Your bank may try again over the next days." + _SIGN_OFF,
    )


def subscription(*, change: str, period_end: datetime | None, base_url: str) -> Mail:
    """`change`: started, ending, resumed, ended or past_due."""
    until = f" on {period_end:%d %B %Y}" if period_end else " at the end of the period"
    words = {
        "started": ("Your RodeoAI Pro subscription is active", "Your Pro plan is active now."),
        "ending": (
            "Your RodeoAI Pro subscription will end",
            f"Your Pro subscription is cancelled and ends{until}. Until then nothing changes; "
            "you can resume it before then.",
        ),
        "resumed": (
            "Your RodeoAI Pro subscription continues",
            "Your Pro subscription will renew as before: the cancellation is undone.",
        ),
        "ended": (
            "Your RodeoAI Pro subscription has ended",
            "Your Pro subscription has ended, and the account is on the free plan now.",
        ),
        "past_due": (
            "Your RodeoAI Pro payment is overdue",
            "The latest payment for your Pro subscription has not come through. Pro stays "
            "on while your bank retries; please check your payment method.",
        ),
    }
    subject, text = words[change]
    return Mail(
        "subscription", subject, f"{text}\n\nDetails and payments: {base_url}/billing" + _SIGN_OFF
    )
