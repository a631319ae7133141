"""user_client."""
