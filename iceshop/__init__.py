"""ICESHOP: the shop domain on the actor runtime."""
