// Render path "shader": the projection runs here, per vertex.
// Each layer's aligned (N, p) float32 data live in an RGBA32F texture, q = ceil(p/4) texels per
// point (zero-padded), point i's texel k at linear index i*q + k, row-major in rows of u_tex_w texels.
// p is not capped: the loop runs q times. The p x d frame F is a small RGBA32F texture (q x d):
// texel (k, c) holds F[4k..4k+3, c]. Position = ((1 - s) a + s b) F.
uniform sampler2D u_data_a;
uniform sampler2D u_data_b;
uniform sampler2D u_frame;
uniform int u_q;
uniform int u_tex_w;
uniform float u_s;

vec4 lt_fetch(sampler2D tex, int lin) {
    return texelFetch(tex, ivec2(lin % u_tex_w, lin / u_tex_w), 0);
}

void main() {
    int i = gl_VertexID;
    vec3 pos = vec3(0.0);
    for (int k = 0; k < u_q; ++k) {
        int lin = i * u_q + k;
        vec4 v = mix(lt_fetch(u_data_a, lin), lt_fetch(u_data_b, lin), u_s);
        pos.x += dot(v, texelFetch(u_frame, ivec2(k, 0), 0));
        pos.y += dot(v, texelFetch(u_frame, ivec2(k, 1), 0));
        if (u_dims == 3) pos.z += dot(v, texelFetch(u_frame, ivec2(k, 2), 0));
    }
    lt_finish(pos, i);
}
