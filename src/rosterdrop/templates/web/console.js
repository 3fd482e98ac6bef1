// The console works without this file; it only adds what a script does better.
// Upload page: a ZIP dropped anywhere on the drop zone becomes the form's file, so an
// admin can drag the export from a folder window; sending stays a click (the mode is
// chosen first).
"use strict";
document.querySelectorAll("[data-dropzone]").forEach((zone) => {
  const input = zone.querySelector("input[type=file]");
  const chosen = zone.querySelector("[data-dropzone-chosen]");
  if (!input) return;
  const show = () => {
    if (chosen) chosen.textContent = input.files.length ? `Chosen: ${input.files[0].name}` : "";
  };
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
  input.addEventListener("change", show);
});
