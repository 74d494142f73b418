"""Notifications, the writing half: outbox rows written in the transaction of the event
that causes them (a close, a fill, a publication, an alert), so a message exists if and
only if its event committed. ``monitoring.notifications`` is the sending half.

It sits in ``signals_app`` because every layer that causes a message writes it here:
``signals_app`` (a signal awaiting approval) and ``positions`` (fills, closes, alerts),
and neither may import ``monitoring``.
"""
