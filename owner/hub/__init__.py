"""The owner's hub (`doorstep home`): the blind inbox plus the web app it serves to the
household's enrolled browsers, which alone decrypt (docs/design.md decision 24, docs/app.md)."""
