import sys

if __name__ == "__main__":  # not when a spawned worker process re-imports the main module (chtn.engine's pool)
    from chtn.cli import main

    sys.exit(main())
