"""Identity resolution: one customer across sources, with ids that stay put (`identity:`)."""
