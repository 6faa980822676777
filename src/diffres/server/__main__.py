"""`python -m diffres.server`: the service in the foreground (the same as `diffres serve`)."""

from diffres.server.app import serve

if __name__ == "__main__":
    serve()
