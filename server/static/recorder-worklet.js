// The playground's recorder: hands each block of microphone samples (channel 0, Float32) to the page,
// which writes them as a WAV file (any server decodes WAV; no browser codec is involved).
class PcmRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("pcm-recorder", PcmRecorder);
