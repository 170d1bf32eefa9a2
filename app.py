"""MAVIS demo: steer a language model between objectives at inference time, live (the Spaces entry point).

    python app.py [--stack PATH] [--host HOST] [--port PORT] [--study-db PATH]

The app itself is the `app/` package beside this file (Python imports the package, not this file, as `app`);
docs/app.md describes it.
"""

from app import main

if __name__ == "__main__":
    main()
