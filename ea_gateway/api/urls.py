from __future__ import annotations

from django.urls import path

from ea_gateway.api import views

urlpatterns = [
    path("client/poll", views.PollView.as_view(), name="ea-poll"),
    path("client/ack", views.AckView.as_view(), name="ea-ack"),
    path("client/close-commands", views.CloseCommandsView.as_view(), name="ea-close-commands"),
    path("client/close-ack", views.CloseAckView.as_view(), name="ea-close-ack"),
    path("client/heartbeat", views.HeartbeatView.as_view(), name="ea-heartbeat"),
    path("feed/quotes", views.FeedQuotesView.as_view(), name="feed-quotes"),
]
