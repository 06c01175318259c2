"""The web console served at / by `guardian serve` and `guardian agent`: plain JS/CSS shipped in
the package (no CDN, no build step), over the same API and token auth."""
