"""The owner tools' forms: why a manual close, and which price a test-breach tries."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from signals_app.models import PRICE

MIN_PRICE = Decimal("0.0000000001")

# Internal only: it goes into the close command's note and the audit, never to a client
# (the client is told "closed by the desk").
MANUAL_CLOSE_REASONS = [
    ("risk", "Risk management"),
    ("news", "News or event risk"),
    ("signal_invalidated", "Signal no longer valid"),
    ("client_request", "Client asked to close"),
    ("correction", "Correcting an error"),
    ("other", "Other (say why in the note)"),
]


class ManualCloseForm(forms.Form):
    reason = forms.ChoiceField(choices=[("", "---------"), *MANUAL_CLOSE_REASONS])
    note = forms.CharField(
        required=False,
        max_length=900,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Internal: kept with the close command and in the audit log, never sent to the client.",
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("reason") == "other" and not cleaned.get("note", "").strip():
            self.add_error("note", "Say why when the reason is Other.")
        return cleaned


class BreachTestForm(forms.Form):
    """One price (taken as both bid and ask) or a bid/ask pair."""

    price = forms.DecimalField(
        required=False, **PRICE, min_value=MIN_PRICE, help_text="Used as both bid and ask."
    )
    bid = forms.DecimalField(required=False, **PRICE, min_value=MIN_PRICE)
    ask = forms.DecimalField(required=False, **PRICE, min_value=MIN_PRICE)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        price, bid, ask = cleaned.get("price"), cleaned.get("bid"), cleaned.get("ask")
        if price is not None:
            if bid is not None or ask is not None:
                raise forms.ValidationError("Enter either one price or a bid and an ask, not both.")
            cleaned["bid"] = cleaned["ask"] = price
        elif bid is None or ask is None:
            raise forms.ValidationError("Enter a price, or both a bid and an ask.")
        elif bid > ask:
            raise forms.ValidationError("The bid cannot be above the ask.")
        return cleaned
