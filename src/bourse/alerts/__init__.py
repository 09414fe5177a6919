"""Price alerts as a service: the alert book (`bourse.analytics.alerts`) folded over the
accounts' alert requests on ALERTS and the quotes on MARKET_DATA (`service`), and the
gateway's view of every account's alerts (`view`)."""
