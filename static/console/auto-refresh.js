// A console page that reloads itself every data-seconds (an owner leaves it open on a
// screen), unless the reader pauses it: a timed reload the reader cannot stop (a meta
// refresh) fails WCAG 2.2.1. The page holds
//   <div id="auto-refresh" data-seconds="N" data-state="running">
//     <button type="button" id="pause-refresh" aria-pressed="false">Pause refreshing</button>
//   </div>
document.addEventListener("DOMContentLoaded", () => {
  const control = document.getElementById("auto-refresh");
  const button = document.getElementById("pause-refresh");
  const seconds = Number(control.dataset.seconds);
  let timer = null;
  const run = () => { timer = setTimeout(() => window.location.reload(), seconds * 1000); };
  button.addEventListener("click", () => {
    const pausing = timer !== null;
    if (pausing) { clearTimeout(timer); timer = null; } else { run(); }
    button.setAttribute("aria-pressed", String(pausing));
    button.textContent = pausing ? "Resume refreshing" : "Pause refreshing";
    control.dataset.state = pausing ? "paused" : "running";
  });
  run();
});
