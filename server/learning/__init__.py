"""The learning loop: what askers and experts say about answers. It reads the answer
records that chat writes; chat never imports it."""
