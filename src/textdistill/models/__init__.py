"""Teachers and students."""
