() => {
  // The chatbot's copy buttons copy a message's raw content, which here is HTML (the highlights).
  // After Gradio has copied it, put the text the user sees on the clipboard instead.
  const shown = (message) => {
    const answer = message.querySelector(".llma-answer");
    return (answer || message).innerText.trim();
  };
  const copied = (button) => {
    const label = button.getAttribute("aria-label");
    if (label === "Copy message") {
      const buttons = button.closest(".message-buttons");
      const row = buttons && buttons.previousElementSibling;
      const message = row && row.querySelector("[data-testid='bot'], [data-testid='user']");
      return message ? shown(message) : null;
    }
    if (label === "Copy conversation") {
      return [...document.querySelectorAll("#llma-chat [data-testid='bot'], #llma-chat [data-testid='user']")]
        .map((m) => (m.dataset.testid === "user" ? "You: " : "Assistant: ") + shown(m)).join("\n\n");
    }
    return null;
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("#llma-chat button");
    const text = button ? copied(button) : null;
    if (text !== null && navigator.clipboard) {
      setTimeout(() => navigator.clipboard.writeText(text), 150);
    }
  }, true);
}
