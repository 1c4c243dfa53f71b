"""The web playground's static files (HTML, CSS, JavaScript, sample images), served by
``clconv.api.playground``."""
