"""The Streamlit studio (``fvis studio`` runs ``studio.py``; see fvis.cli.studio_app)."""
