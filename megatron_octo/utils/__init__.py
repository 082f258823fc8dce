"""Small helpers shared by the commands."""
