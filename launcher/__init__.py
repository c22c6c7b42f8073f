"""`digits-run`: the server with the shipped model plus each bot whose token is set, supervised."""
