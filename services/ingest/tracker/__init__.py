"""The public web tracker and feedback widget: site tokens, `POST /v1/collect`, the two embeddable scripts."""
