"""The activity counts the API reports per delivery (GET /deliveries/daily-results and others)."""

DELIVERY_METRICS = {
    "sent": "sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "opened": "opens",
    "uniqueOpened": "unique_opens",
    "clicked": "clicks",
    "uniqueClicked": "unique_clicks",
    "unsubscribed": "unsubscribes",
}
"""The API's name of each metric -> the column of `marts.delivery_daily` that counts it."""

API_DELIVERY_METRICS = tuple(DELIVERY_METRICS)
