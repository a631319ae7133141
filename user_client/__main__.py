"""`python -m user_client ...` is `proofmarket user ...`."""

from proofmarket.commands.services import user

if __name__ == "__main__":
    user(prog_name="python -m user_client")
