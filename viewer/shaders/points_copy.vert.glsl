// Render paths "copy" and "cuda": positions (N, d) float32 are already projected (kernels.project
// on the host or on CuPy, or written by CUDA straight into this vertex buffer through interop).
attribute $POS_TYPE a_pos;

void main() {
    vec3 pos = vec3(0.0);
    pos.xy = a_pos.xy;
    $POS_Z
    lt_finish(pos, gl_VertexID);
}
