"""The dashboard: its static pages, its sign-in session and the data calls its pages make."""
