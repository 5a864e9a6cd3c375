"""The execution stage (`marketpulse execute`): signals become sized, risk-checked order intents,
approved by a person (semi_auto) or at once (auto), and filled on PAPER against the real order
book; positions and PnL follow. Pure modules (sizing, risk, paper, portfolio, stage, books) and
the process around them (service); no private keys, no live orders."""
