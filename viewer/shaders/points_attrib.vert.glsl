// Render path "shader", attribute variant (used when q = ceil(p/4) <= 7, i.e. p <= 28): each
// layer's aligned data are one vertex buffer of q vec4 per point (zero-padded), bound as the
// attributes a_a<k> (layer a) and a_b<k> (layer b), so the GPU's vertex fetch streams them; the
// (p, d) frame is a uniform vec4 array, block c*q + k = F[4k..4k+3, c]. Python expands the two
// placeholders (declarations, body) for the given q and d.
// Position = ((1 - s) a + s b) F; layer b is read only when s != 0.
uniform float u_s;
uniform vec4 u_frame[LT_MAX_FRAME_VEC4];
$DECLS
void main() {
    vec3 pos = vec3(0.0);
    vec4 v;
$BODY
    lt_finish(pos, gl_VertexID);
}
