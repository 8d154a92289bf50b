"""One module per on-disk dataset format, and the tokenising and checks they share."""
