"""Notifications (webhook and e-mail) to the people who act on allocations.

    settings.py  NotificationSettings, the `[notifications]` section (pydantic, frozen)
    message.py   Notification (what a caller sends), Delivery (one outbox row), rendering
    outbox.py    the notification_outbox table, its states, claims and backoff
    webhook.py   the signed JSON POST (the signature scheme is documented there)
    mail.py      SMTP with STARTTLS
    notifier.py  Notifier: routing, notify(), the delivery worker

Nothing is imported here, so that `gateway.config` can import `gateway.notify.settings`
without pulling in the database and HTTP stacks. Importing `gateway.notify.outbox`
registers the table on the shared metadata.
"""
