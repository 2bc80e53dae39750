// One video call per chat: a WebRTC peer connection whose offer, answer and ICE candidates
// travel through the server as `signal` frames. The member the server marks `initiator` makes
// the offer, so the two never collide. Relay-only forces TURN, so the stranger sees only the
// relay's address.

export class VideoCall extends EventTarget {
  constructor({ signal, iceServers, relayOnly, initiator, localStream, PeerConnection }) {
    super();
    this.signal = signal;
    this.initiator = initiator;
    this.pendingCandidates = [];
    this.queue = Promise.resolve(); // signals are handled one at a time, in order
    const RTC = PeerConnection ?? globalThis.RTCPeerConnection;
    this.pc = new RTC({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    if (localStream) {
      for (const track of localStream.getTracks()) this.pc.addTrack(track, localStream);
    } else {
      // No camera: still receive the stranger's.
      this.pc.addTransceiver("audio", { direction: "recvonly" });
      this.pc.addTransceiver("video", { direction: "recvonly" });
    }
    this.localCandidates = 0;
    this.pc.onicecandidate = (event) => {
      if (!event.candidate) return;
      this.localCandidates += 1;
      this.signal({ candidate: event.candidate.toJSON() });
    };
    // With no candidate at all (relay-only and the relay refused us) ICE never reaches
    // "failed" by itself; say so when gathering ends empty-handed.
    this.pc.onicegatheringstatechange = () => {
      if (this.pc.iceGatheringState === "complete" && this.localCandidates === 0) {
        this.emit("state", { state: "failed" });
      }
    };
    this.pc.ontrack = (event) => {
      this.emit("remote", { stream: event.streams[0] ?? new MediaStream([event.track]) });
    };
    this.pc.onconnectionstatechange = () => this.emit("state", { state: this.pc.connectionState });
  }

  async start() {
    if (!this.initiator) return;
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this.signal({ description: this.pc.localDescription.toJSON() });
  }

  /// A `signal` frame's data from the stranger; anything malformed is reported, not thrown.
  handle(data) {
    this.queue = this.queue.then(() => this.apply(data)).catch((error) => {
      this.emit("failed", { message: String(error?.message ?? error) });
    });
    return this.queue;
  }

  async apply(data) {
    if (this.pc.signalingState === "closed" || typeof data !== "object" || data === null) return;
    const { description, candidate } = data;
    if (description) {
      if (!["offer", "answer"].includes(description.type) || typeof description.sdp !== "string") {
        throw new Error("malformed session description");
      }
      await this.pc.setRemoteDescription(description);
      if (description.type === "offer") {
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        this.signal({ description: this.pc.localDescription.toJSON() });
      }
      for (const queued of this.pendingCandidates.splice(0)) await this.pc.addIceCandidate(queued);
    } else if (candidate && typeof candidate === "object") {
      // Candidates can overtake the description they belong to; hold them until it is set.
      if (this.pc.remoteDescription) await this.pc.addIceCandidate(candidate);
      else this.pendingCandidates.push(candidate);
    }
  }

  /// The type of the local candidate in use ("host", "srflx" or "relay"), once connected.
  async localCandidateType() {
    const stats = await this.pc.getStats();
    for (const report of stats.values()) {
      if (report.type === "transport" && report.selectedCandidatePairId) {
        const pair = stats.get(report.selectedCandidatePairId);
        return stats.get(pair?.localCandidateId)?.candidateType ?? null;
      }
    }
    return null;
  }

  close() {
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    this.pc.onicegatheringstatechange = null;
    this.pc.close();
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
