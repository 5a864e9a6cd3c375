"""Alerts: signals from Kafka to Slack (and Telegram, generic JSON webhooks).

    signals ──► Alerter (group `alerts_group`) ──► route (rule, level) ──► channels
                    │  de-dup by signal id, cooldown per rule+subject      │ retries, backoff
                    └──► alerts_state (compacted: its memory)  ◄───────────┘ dead letters

Modules: `config` (channels and routes from YAML, URLs from settings), `format` (Block Kit and
the other payloads), `channels` (HTTP delivery and how each answer is classified), `delivery`
(retry policy), `state` (the de-dup memory on Kafka), `service` (the consumer loop), `routes`
(the API's alert and replay routes), `bench` (latency benchmark).
"""
