"""Notification channels. Adding one means writing its module (a target model, `send`, `preview`) and
adding one line to `CHANNELS`; subscriptions, delivery and retries need no change."""

from monitor.channels import email, slack, webhook
from monitor.channels.base import Channel, Notification, SendContext, Sent, TransportError

CHANNELS: dict[str, Channel] = {
    "email": email.CHANNEL,
    "slack": slack.CHANNEL,
    "webhook": webhook.CHANNEL,
}

__all__ = ["CHANNELS", "Channel", "Notification", "SendContext", "Sent", "TransportError"]
