// Microphone -> PCM16 messages of 20 ms. The AudioContext runs at 16 kHz, so the browser
// has already resampled; this only converts to 16-bit integers and batches 320 samples.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Int16Array(320);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.buffer.length) {
        this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
        this.buffer = new Int16Array(320);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("june-capture", Capture);
