// Render path "shader": the projection runs here, per vertex.
// Each layer's aligned (N, p) float32 data live in an RGBA32F texture, q = ceil(p/4) texels per
// point (zero-padded). A texture row holds u_per_row whole points: point i's texel k is at
// (q * (i % u_per_row) + k, i / u_per_row), so a vertex does one integer division. p is not capped:
// the loop runs q times. The (p, d) frame F arrives as vec4 blocks, block (c, k) = F[4k..4k+3, c]:
// a uniform array when q*d <= LT_MAX_FRAME_VEC4 (the common case: fast on every driver), else a
// small RGBA32F texture (q x d) (LT_FRAME_TEXTURE). Position = ((1 - s) a + s b) F; when s == 0
// only layer a is read.
uniform sampler2D u_data_a;
uniform sampler2D u_data_b;
uniform int u_q;
uniform int u_per_row;
uniform float u_s;
#ifdef LT_FRAME_TEXTURE
uniform sampler2D u_frame_tex;
vec4 lt_frame(int c, int k) { return texelFetch(u_frame_tex, ivec2(k, c), 0); }
#else
uniform vec4 u_frame[LT_MAX_FRAME_VEC4];
vec4 lt_frame(int c, int k) { return u_frame[c * u_q + k]; }
#endif

void main() {
    int i = gl_VertexID;
    ivec2 base = ivec2(u_q * (i % u_per_row), i / u_per_row);
    vec3 pos = vec3(0.0);
    for (int k = 0; k < u_q; ++k) {
        ivec2 t = base + ivec2(k, 0);
        vec4 v = texelFetch(u_data_a, t, 0);
        if (u_s != 0.0) v = mix(v, texelFetch(u_data_b, t, 0), u_s);
        pos.x += dot(v, lt_frame(0, k));
        pos.y += dot(v, lt_frame(1, k));
        if (u_dims == 3) pos.z += dot(v, lt_frame(2, k));
    }
    lt_finish(pos, i);
}
